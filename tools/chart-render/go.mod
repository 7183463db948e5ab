// Only for the import path: scripts/check-charts builds this in GOPATH mode against Debian's Go
// packages, where a go.mod is what lets imports such as github.com/Masterminds/sprig/v3 resolve.
module chart-render

go 1.19
