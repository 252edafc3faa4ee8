# The load balancer takes TLS from anywhere (Global Accelerator keeps the client's address).
resource "aws_security_group" "lb" {
  name_prefix = "meridian-lb-${var.region.name}-"
  description = "Meridian edge load balancer: HTTPS from users"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags

  ingress {
    description = "HTTPS (and WebSocket) from users, through Global Accelerator"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "to the edges"
    from_port   = var.edge_port
    to_port     = var.edge_port
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr]
  }
}

# The edges take user traffic from the load balancer only. With client IP preservation the
# packets carry the users' addresses, so the rule names the load balancer's security group,
# not its addresses.
resource "aws_security_group" "edge" {
  name_prefix = "meridian-edge-${var.region.name}-"
  description = "Meridian edges (Nomad clients)"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags

  ingress {
    description     = "edge HTTP from the load balancer (traffic and /healthz checks)"
    from_port       = var.edge_port
    to_port         = var.edge_port
    protocol        = "tcp"
    security_groups = [aws_security_group.lb.id]
  }

  ingress {
    description = "Nomad client API for operators"
    from_port   = 4646
    to_port     = 4646
    protocol    = "tcp"
    cidr_blocks = var.admin_cidrs
  }

  egress {
    description = "control plane, Nomad servers, package mirrors"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}
