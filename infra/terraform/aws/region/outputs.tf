output "lb_arn" {
  description = "The edges' load balancer: the Global Accelerator endpoint of this region."
  value       = aws_lb.edge.arn
}

output "vpc_id" {
  value = aws_vpc.this.id
}

output "autoscaling_group" {
  value = aws_autoscaling_group.nomad_clients.name
}

output "lb_dns_name" {
  description = "DNS name of the region's load balancer: what the region's public_url name points at."
  value       = aws_lb.edge.dns_name
}
