from recgpt_cli.cli import main

main()
