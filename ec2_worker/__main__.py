from ec2_worker.server import main

main()
