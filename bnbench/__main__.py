from bnbench.cli.app import main

main()
