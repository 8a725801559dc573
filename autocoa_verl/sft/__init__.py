"""The AutoCoA SFT stages on verl: span-masked datasets, the contrastive loss, the trainer that swaps it in."""
