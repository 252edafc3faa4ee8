from examples.collab.server import main

main()
