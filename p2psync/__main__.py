from p2psync.cli import main

main()
