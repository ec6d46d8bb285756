module github.com/toolpool/toolpool/bindings/go

go 1.26
