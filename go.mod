module github.com/wsgibridge/wsgibridge

go 1.26.8
