//! The caller's tenant, read from the `grym-tenant` request metadata by an
//! interceptor, so handlers find it as a request extension. Sessions and
//! cached context are kept per tenant; a caller that names none shares the
//! anonymous tenant with every other such caller.

use tonic::{Request, Status};

/// Who is calling, for the isolation of context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tenant(pub(crate) String);

/// The longest tenant name accepted.
const MAX_LEN: usize = 128;

/// Records the caller's tenant; a malformed one is `INVALID_ARGUMENT`.
pub(crate) fn interceptor(mut request: Request<()>) -> Result<Request<()>, Status> {
    let tenant = match request.metadata().get("grym-tenant") {
        None => Tenant::default(),
        Some(value) => {
            let name = value
                .to_str()
                .ok()
                .filter(|name| {
                    !name.is_empty()
                        && name.len() <= MAX_LEN
                        && name.chars().all(|c| c.is_ascii_graphic())
                })
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "invalid grym-tenant metadata: 1 to {MAX_LEN} visible ASCII characters"
                    ))
                })?;
            Tenant(name.to_owned())
        }
    };
    request.extensions_mut().insert(tenant);
    Ok(request)
}

/// The tenant a request carries (the anonymous one when none).
pub(crate) fn of<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Tenant>()
        .map(|tenant| tenant.0.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_is_read_and_checked() {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("grym-tenant", "acme".parse().unwrap());
        assert_eq!(of(&interceptor(request).unwrap()), "acme");
        assert_eq!(of(&interceptor(Request::new(())).unwrap()), "");
        let mut bad = Request::new(());
        bad.metadata_mut()
            .insert("grym-tenant", "a b".parse().unwrap());
        assert_eq!(
            interceptor(bad).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
