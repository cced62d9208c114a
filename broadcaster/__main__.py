from common.cli import main
from broadcaster.cli import main as command

main(command, "broadcaster")
