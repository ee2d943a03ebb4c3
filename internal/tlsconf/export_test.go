package tlsconf

// VerifiedByAt is VerifiedBy at a given time.
var VerifiedByAt = (*Source).verifiedByAt
