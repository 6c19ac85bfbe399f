from vprbench.cli import main

main()
