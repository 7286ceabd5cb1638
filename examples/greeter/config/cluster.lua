-- The example's cluster: node name = "host:port" (skynet's clustername form).
__nowaiting = true
hall = "127.0.0.1:7711"
bank = "127.0.0.1:7712"
