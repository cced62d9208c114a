from common.cli import main
from producer.cli import main as command

main(command, "producer")
