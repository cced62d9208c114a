from common.cli import main
from scorer.cli import main as command

main(command, "scorer")
