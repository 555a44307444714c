"""Entry points: `ray job submit ... -- python jobs/<name>.py` and the `novacron` CLI."""
