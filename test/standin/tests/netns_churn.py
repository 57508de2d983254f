"""One stand-in's network life, over and over, as a test worker's is: start, instances' namespaces made
one by one, every made one entered after each new one, stop. Run as several processes at once by
test_hosts.py, each printing every failed entry into one of its live namespaces (nothing when all
succeeded): ``python -m standin.tests.netns_churn CYCLES INSTANCES``."""

from __future__ import annotations

import subprocess
import sys

from standin import hosts


def churn(cycles: int, instances: int) -> list[str]:
    failures = []
    for _ in range(cycles):
        network = hosts.PrivateNetwork().start()
        try:
            live = []
            for n in range(instances):
                live.append(network.namespace(f"i-{n:017x}", str(network.subnet.network_address + 4 + n)))
                for namespace in live:
                    entered = subprocess.run(
                        ["nsenter", f"--net={hosts.NETNS_DIR}/{namespace}", "true"], capture_output=True, text=True
                    )
                    if entered.returncode != 0:
                        failures.append(f"{namespace}: {entered.stderr.strip() or entered.returncode}")
        finally:
            network.stop()
    return failures


if __name__ == "__main__":
    for failure in churn(int(sys.argv[1]), int(sys.argv[2])):
        print(failure)
