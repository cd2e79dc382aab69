"""``python -m ats`` is ``ats-run``; also ``torchrun --nproc_per_node=K -m ats --task ...``."""

from ats.cli import run_main

if __name__ == "__main__":
    run_main(prog_name="python -m ats")
