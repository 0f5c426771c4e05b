from dwsearch.cli import main

main()
