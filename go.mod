module github.com/ournet/ournet

go 1.26.8
