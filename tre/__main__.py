from tre.cli import main

main()
