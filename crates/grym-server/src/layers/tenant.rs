//! The caller's tenant, resolved so handlers find it as a request
//! extension, a core [`Tenant`]. Sessions, cached context and tasks are kept
//! per tenant.
//!
//! One source names the tenant, chosen by the configuration:
//! 1. with `tls.tenant_from_certificate`, the identity of the caller's
//!    verified client certificate (its first DNS or URI subject alternative
//!    name, else its subject common name); a certificate that names none,
//!    or none valid as a tenant, is `UNAUTHENTICATED`;
//! 2. with `[auth] tokens` (which the configuration refuses beside the
//!    former), the token;
//! 3. otherwise the declared `grym-tenant` metadata.
//!
//! The first two ignore `grym-tenant`. With `[auth] tokens` configured, a caller must send
//! `authorization: Bearer TOKEN`; the token names its tenant, and a missing
//! or unknown token is `UNAUTHENTICATED`. Without tokens, grymd trusts the
//! `grym-tenant` metadata as sent, which suits a trusted network only; a
//! caller that names none shares the anonymous tenant.

use std::collections::HashMap;
use std::sync::Arc;

use grym_core::{Orchestrator, Tenant};
use tonic::{Request, Status};

use crate::listen::conn::ConnInfo;

/// Resolves each request's tenant.
#[derive(Clone, Default)]
pub(crate) struct Resolver {
    /// Bearer token -> tenant; empty when tokens are not required.
    tokens: Arc<HashMap<String, Tenant>>,
    /// Whether the client certificate names the tenant.
    from_certificate: bool,
    /// Where refused credentials are counted.
    audit: Option<Arc<Orchestrator>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        f.debug_struct("Resolver")
            .field("tokens", &self.tokens.len())
            .field("from_certificate", &self.from_certificate)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver that requires one of `tokens` when there are any.
    pub(crate) fn new(tokens: HashMap<String, Tenant>) -> Self {
        Self {
            tokens: Arc::new(tokens),
            from_certificate: false,
            audit: None,
        }
    }

    /// A resolver that takes the tenant from the client certificate's
    /// identity instead.
    pub(crate) fn from_certificate() -> Self {
        Self {
            tokens: Arc::default(),
            from_certificate: true,
            audit: None,
        }
    }

    /// Counts refused credentials in `orchestrator`'s metrics.
    pub(crate) fn audited_by(mut self, orchestrator: Arc<Orchestrator>) -> Self {
        self.audit = Some(orchestrator);
        self
    }

    /// Logs and counts a refusal of the caller's credentials; the token is
    /// never logged.
    fn refuse(&self, request: &Request<()>, reason: &'static str, status: Status) -> Status {
        tracing::warn!(
            peer = ?request.remote_addr(),
            reason,
            "authentication failed"
        );
        if let Some(orchestrator) = &self.audit {
            orchestrator.record_auth_failure(reason);
        }
        status
    }

    /// Records the caller's tenant on the request.
    pub(crate) fn resolve(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let tenant = if self.from_certificate {
            certified(&request)
                .map_err(|status| self.refuse(&request, "certificate_identity", status))?
        } else if self.tokens.is_empty() {
            declared(&request)?
        } else {
            let token = request
                .metadata()
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "));
            let Some(token) = token else {
                return Err(self.refuse(
                    &request,
                    "missing_token",
                    Status::unauthenticated("send authorization: Bearer TOKEN"),
                ));
            };
            let Some(tenant) = self.tokens.get(token.trim()) else {
                return Err(self.refuse(
                    &request,
                    "unknown_token",
                    Status::unauthenticated("the token is not known"),
                ));
            };
            tenant.clone()
        };
        request.extensions_mut().insert(tenant);
        Ok(request)
    }
}

/// The tenant the caller's verified client certificate names.
fn certified(request: &Request<()>) -> Result<Tenant, Status> {
    let identity = request
        .extensions()
        .get::<ConnInfo>()
        .and_then(|info| info.identity.as_deref())
        .ok_or_else(|| {
            Status::unauthenticated(
                "the client certificate names no identity (DNS or URI name, or common name)",
            )
        })?;
    Tenant::new(identity).map_err(|_| {
        Status::unauthenticated(format!(
            "the client certificate's identity is not a tenant: 1 to {} visible ASCII characters",
            Tenant::MAX_LEN
        ))
    })
}

/// The tenant a caller declares in `grym-tenant`, checked.
fn declared(request: &Request<()>) -> Result<Tenant, Status> {
    match request.metadata().get("grym-tenant") {
        None => Ok(Tenant::anonymous()),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|name| Tenant::new(name).ok())
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "invalid grym-tenant metadata: 1 to {} visible ASCII characters",
                    Tenant::MAX_LEN
                ))
            }),
    }
}

/// The tenant a request carries (the anonymous one when none).
pub(crate) fn of<T>(request: &Request<T>) -> Tenant {
    request
        .extensions()
        .get::<Tenant>()
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(key: &'static str, value: &str) -> Request<()> {
        let mut request = Request::new(());
        request.metadata_mut().insert(key, value.parse().unwrap());
        request
    }

    #[test]
    fn without_tokens_the_declared_tenant_is_read_and_checked() {
        let resolver = Resolver::default();
        assert_eq!(
            of(&resolver.resolve(with("grym-tenant", "acme")).unwrap()).as_str(),
            "acme"
        );
        assert_eq!(
            of(&resolver.resolve(Request::new(())).unwrap()).as_str(),
            ""
        );
        let bad = resolver.resolve(with("grym-tenant", "a b")).unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn with_tokens_the_token_names_the_tenant_and_nothing_else_does() {
        let resolver = Resolver::new(HashMap::from([(
            "s3cret".to_owned(),
            Tenant::new("acme").unwrap(),
        )]));
        let request = resolver
            .resolve(with("authorization", "Bearer s3cret"))
            .unwrap();
        assert_eq!(of(&request).as_str(), "acme");
        for request in [
            with("grym-tenant", "acme"),
            with("authorization", "Bearer guess"),
            Request::new(()),
        ] {
            assert_eq!(
                resolver.resolve(request).unwrap_err().code(),
                tonic::Code::Unauthenticated
            );
        }
    }

    #[test]
    fn with_certificates_the_identity_names_the_tenant_and_nothing_else_does() {
        use crate::listen::activity::Activity;
        let resolver = Resolver::from_certificate();
        let mut request = with("grym-tenant", "someone-else");
        request.extensions_mut().insert(ConnInfo {
            remote: ([127, 0, 0, 1], 4000).into(),
            local: None,
            identity: Some("agent.example".into()),
            activity: Arc::new(Activity::new()),
        });
        let request = resolver.resolve(request).unwrap();
        assert_eq!(of(&request).as_str(), "agent.example");
        let unnamed = resolver.resolve(with("grym-tenant", "acme")).unwrap_err();
        assert_eq!(unnamed.code(), tonic::Code::Unauthenticated);
    }
}
