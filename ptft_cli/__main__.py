from ptft_cli.cli import main

main()
