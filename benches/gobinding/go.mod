module toolpool/benches/gobinding

go 1.26

require github.com/toolpool/toolpool/bindings/go v0.0.0

replace github.com/toolpool/toolpool/bindings/go => ../../bindings/go
