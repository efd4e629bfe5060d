module governor.local/loadgen

go 1.22
