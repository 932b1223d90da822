//! Classifying the SDK's errors: whether the server could not be reached at all (a transient
//! failure worth retrying later) and whether a describe call failed only because there is no
//! index yet. Apart so the matching on SDK error shapes, and its tests, sit in one place.

/// Whether the SDK failed to reach the server at all (refused, gone, timed out), as opposed to
/// the server answering with an error.
pub(super) fn is_unreachable(e: &::milvus::v2::error::Error) -> bool {
    use ::milvus::v2::error::Error;
    // gRPC's CANCELLED, DEADLINE_EXCEEDED and UNAVAILABLE (tonic is not a dependency of ours).
    const CANCELLED: i32 = 1;
    const DEADLINE_EXCEEDED: i32 = 4;
    const UNAVAILABLE: i32 = 14;
    match e {
        Error::Grpc(status) => matches!(
            i32::from(status.code()),
            CANCELLED | DEADLINE_EXCEEDED | UNAVAILABLE
        ),
        Error::Timeout(_) => true,
        Error::RetryExhausted { source, .. } => is_unreachable(source),
        _ => false,
    }
}

pub(super) fn is_index_not_found(e: &::milvus::v2::error::Error) -> bool {
    use ::milvus::v2::error::Error;
    match e {
        // 700 is IndexNotExist in Milvus ≥ 2.3; 11 its legacy code.
        Error::Server(s) => {
            s.code() == 700 || s.legacy_code() == 11 || s.reason().contains("index not found")
        }
        Error::RetryExhausted { source, .. } => is_index_not_found(source),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::milvus::v2::error::Error;

    #[test]
    fn only_failures_to_reach_the_server_are_transient() {
        assert!(is_unreachable(&Error::Timeout("connecting".into())));
        assert!(is_unreachable(&Error::RetryExhausted {
            attempts: 3,
            source: Box::new(Error::Timeout("search".into())),
        }));
        assert!(!is_unreachable(&Error::MalformedResponse(
            "no status".into()
        )));
        assert!(!is_unreachable(&Error::Unexpected("x".into())));
    }
}
