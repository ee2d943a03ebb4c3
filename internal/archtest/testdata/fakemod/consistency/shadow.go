package consistency

import (
	"os/exec"
	"time"

	"google.golang.org/grpc/codes"
)

type fake struct{}

func (fake) Now() int { return 0 }

// A parameter named time shadows the package: not a clock read.
func shadow(time fake) int { return time.Now() }

var _ time.Month
var _ = exec.Command
var _ codes.Code
