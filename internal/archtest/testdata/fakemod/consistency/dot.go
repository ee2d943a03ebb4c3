package consistency

import . "time"

var _ Duration
