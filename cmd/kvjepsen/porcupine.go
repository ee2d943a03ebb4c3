package main

import "github.com/anishathalye/porcupine"

// porcupineInfo carries the checker's linearization info to the report.
type porcupineInfo struct{ porcupine.LinearizationInfo }
