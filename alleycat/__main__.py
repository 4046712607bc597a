from alleycat.cli import main

main()
