# One accelerator for the whole fleet: two static anycast IPv4 addresses announced from every AWS
# edge location; a user's packets enter the AWS network nearest them and go to the nearest
# healthy region's edges. DNS for the edges (e.g. edge.example.com) points at those two addresses.
resource "aws_globalaccelerator_accelerator" "edges" {
  name            = "meridian-edges"
  ip_address_type = "IPV4"
  enabled         = true
}

resource "aws_globalaccelerator_listener" "https" {
  accelerator_arn = aws_globalaccelerator_accelerator.edges.id
  protocol        = "TCP"
  # A WebSocket or a keep-alive connection stays on the edge it first reached.
  client_affinity = "SOURCE_IP"

  port_range {
    from_port = 443
    to_port   = 443
  }
}

resource "aws_globalaccelerator_endpoint_group" "region" {
  for_each              = local.region_modules
  listener_arn          = aws_globalaccelerator_listener.https.id
  endpoint_group_region = local.regions[each.key].cloud_region

  # For load-balancer endpoints the accelerator follows the target group's /healthz checks;
  # these settings apply to the group itself and say the same thing.
  health_check_protocol         = "HTTP"
  health_check_path             = "/healthz"
  health_check_port             = var.edge_port
  health_check_interval_seconds = 10
  threshold_count               = 2
  traffic_dial_percentage       = 100

  endpoint_configuration {
    endpoint_id = each.value.lb_arn
    weight      = 100
    # Edges see the user's address: placement by client IP and per-user limits need it.
    client_ip_preservation_enabled = true
  }
}
