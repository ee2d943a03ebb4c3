module example.com/fakemod/tools

go 1.26
