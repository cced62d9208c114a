from common.cli import main
from logger.cli import main as command

main(command, "logger")
