# An example catalog of three regions; copy and edit. (Secrets go in a separate, unversioned file.)
# public_url is each region's own name (a CNAME of its load balancer: output region_load_balancers);
# the anycast addresses (output anycast_addresses) are for the name clients call connect on.
control_url  = "dns+srv://_meridian-control._tcp.example.com"
edge_version = "1"
regions = [
  { name = "eu-west", lat = 53.35, lon = -6.26, capacity = 2000, public_url = "https://eu-west.edge.example.com", cloud_region = "eu-west-1" },
  { name = "us-east", lat = 38.9, lon = -77.0, capacity = 2000, public_url = "https://us-east.edge.example.com", cloud_region = "us-east-1" },
  { name = "ap-northeast", lat = 35.68, lon = 139.69, capacity = 1000, public_url = "https://ap-northeast.edge.example.com", cloud_region = "ap-northeast-1" },
]
nomad_servers    = ["nomad.example.com:4647"]
ami_ids          = { "eu-west" = "ami-00000000000000001", "us-east" = "ami-00000000000000002", "ap-northeast" = "ami-00000000000000003" }
certificate_arns = { "eu-west" = "arn:aws:acm:eu-west-1:123456789012:certificate/x", "us-east" = "arn:aws:acm:us-east-1:123456789012:certificate/y", "ap-northeast" = "arn:aws:acm:ap-northeast-1:123456789012:certificate/z" }
