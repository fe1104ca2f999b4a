module github.com/wsgibridge/wsgibridge

go 1.26.8

require (
	github.com/stretchr/testify v1.12.1
	github.com/yookoala/gofast v0.8.0
)

require (
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/tools v0.0.0-20200908211811-12e1bf57a112 // indirect
)
