resource "aws_launch_template" "nomad_client" {
  name_prefix            = "meridian-client-${var.region.name}-"
  image_id               = var.ami_id
  instance_type          = var.instance_type
  vpc_security_group_ids = [aws_security_group.edge.id]
  user_data = base64encode(templatefile("${path.module}/nomad-client.hcl.tftpl", {
    datacenter    = var.region.datacenter
    servers       = var.nomad_servers
    edge_version  = var.edge_version
    meridian_name = var.region.name
  }))

  metadata_options {
    http_tokens = "required"
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "meridian-client-${var.region.name}" })
  }
}

# The region's Nomad clients. nomad/edge.nomad.hcl is a system job: every client runs one edge,
# so this group's size is the region's edge count.
resource "aws_autoscaling_group" "nomad_clients" {
  name_prefix         = "meridian-clients-${var.region.name}-"
  min_size            = var.clients.min
  desired_capacity    = var.clients.desired
  max_size            = var.clients.max
  vpc_zone_identifier = aws_subnet.public[*].id
  target_group_arns   = [aws_lb_target_group.edge.arn]
  health_check_type   = "ELB"

  launch_template {
    id      = aws_launch_template.nomad_client.id
    version = aws_launch_template.nomad_client.latest_version
  }

  tag {
    key                 = "meridian:region"
    value               = var.region.name
    propagate_at_launch = true
  }

  # A scale-in must not cut WebSockets: drain the node (meridian edge drain) before it goes.
  lifecycle {
    ignore_changes = [desired_capacity]
  }
}
