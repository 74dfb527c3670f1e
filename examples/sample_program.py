"""A program that prints like real ones do: log lines on stdout, warnings on stderr,
and a progress bar redrawn in place with \\r. outspool's demo runs it under capture."""

import sys
import time

STEPS = 20

print("loading dataset: 1,000 items", flush=True)
for step in range(1, STEPS + 1):
    done = step * 100 // STEPS
    bar = "█" * (done // 5) + " " * (20 - done // 5)
    sys.stderr.write(f"\rtraining {done:3d}%|{bar}| {step}/{STEPS}")
    sys.stderr.flush()
    if step % 5 == 0:
        print(f"step {step}: loss={1.0 / step:.4f} ✓", flush=True)
    if step == 12:
        sys.stderr.write("\nwarning: learning rate looks high\n")
    time.sleep(0.1)
sys.stderr.write("\n")
print("saved the model to model.bin", flush=True)
