from btcflow.cli.main import main

main()
