from tokenmux.cli.main import main

main()
