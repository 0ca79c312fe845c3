from btcflow.cli import main

main()
