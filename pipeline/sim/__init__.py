"""The simulator (scenarios, faults, realism) and the offline evaluation that scores detection."""
