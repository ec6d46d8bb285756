module toolpool/benches/gopool

go 1.21
