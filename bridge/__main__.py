from bridge.cli import main as command
from common.cli import main

main(command, "bridge")
