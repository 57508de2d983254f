"""ssm-deploy: deploy to EC2 instances through AWS Systems Manager Run Command."""
