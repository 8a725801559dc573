"""verl on the CPU: the ``cpu`` platform plugin (``platform.py``) and the vLLM-CPU rollout replica it registers
(``rollout.py``)."""
