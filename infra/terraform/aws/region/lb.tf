# A network load balancer in front of the region's edges: it terminates TLS and passes the TCP
# stream on (WebSockets and the edge's fast path see plain HTTP/1.1), keeping the client's address.
resource "aws_lb" "edge" {
  name_prefix        = "mrd-"
  load_balancer_type = "network"
  internal           = false
  subnets            = aws_subnet.public[*].id
  security_groups    = [aws_security_group.lb.id]
  tags               = local.tags
}

resource "aws_lb_target_group" "edge" {
  name_prefix        = "mrd-"
  port               = var.edge_port
  protocol           = "TCP"
  target_type        = "instance"
  vpc_id             = aws_vpc.this.id
  preserve_client_ip = true
  # As long as the edge's kill_timeout: a deregistered edge keeps its open connections.
  deregistration_delay = 900
  tags                 = local.tags

  health_check {
    protocol            = "HTTP"
    path                = "/healthz"
    port                = "traffic-port"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.edge.arn
  port              = 443
  protocol          = "TLS"
  certificate_arn   = var.certificate_arn
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  alpn_policy       = "HTTP1Only"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.edge.arn
  }
}
