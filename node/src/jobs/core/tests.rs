//! Unit and property tests of the job core.
