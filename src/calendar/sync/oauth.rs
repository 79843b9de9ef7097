//! OAuth 2.0 for calendar providers: the `oauth2` crate's authorization-code flow with PKCE
//! (S256) and refresh, its HTTP calls made by our outbound client (no redirects, the SSRF
//! guard, a breaker and metrics per provider); RFC 7009 revocation.

use std::sync::Arc;

use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet, HttpRequest,
    HttpResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, Scope, TokenResponse, TokenUrl,
    basic::BasicClient,
};
use secrecy::ExposeSecret;

use super::Provider;
use crate::{
    config::ProviderSettings,
    outbound::{Call, Outbound},
};

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Why an OAuth call failed.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("the provider refused: {0}")]
    Refused(String),
    /// `invalid_grant`: the grant was revoked or expired; the user must connect again.
    #[error("the grant is no longer valid (revoked or expired)")]
    InvalidGrant,
    #[error("the provider could not be reached: {0}")]
    Transport(String),
    #[error("provider settings: {0}")]
    Config(String),
}

/// Tokens from a code exchange or a refresh.
#[derive(Debug)]
pub struct Tokens {
    pub access: String,
    pub refresh: Option<String>,
    pub expires_in: Option<std::time::Duration>,
    pub scope: Option<String>,
}

/// The adapter: the `oauth2` crate's requests sent by [`Outbound`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

fn http(
    outbound: &Arc<Outbound>,
    dependency: &'static str,
) -> impl Fn(HttpRequest) -> std::pin::Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send>> {
    let outbound = Arc::clone(outbound);
    move |req: HttpRequest| {
        let outbound = Arc::clone(&outbound);
        Box::pin(async move {
            let url = url::Url::parse(&req.uri().to_string()).map_err(|e| HttpError(e.to_string()))?;
            let headers: Vec<(String, String)> = req
                .headers()
                .iter()
                .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned())))
                .collect();
            let pairs: Vec<(&str, String)> = headers.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            let answer = outbound
                .send(
                    dependency,
                    Call {
                        method: req.method().clone(),
                        url: &url,
                        headers: &pairs,
                        body: bytes::Bytes::from(req.into_body()),
                        max_body: 256 * 1024,
                    },
                )
                .await
                .map_err(|e| HttpError(e.to_string()))?;
            let mut res = http::Response::builder().status(answer.status);
            for (k, v) in &answer.headers {
                res = res.header(k, v);
            }
            res.body(answer.body.to_vec()).map_err(|e| HttpError(e.to_string()))
        })
    }
}

/// The OAuth client of a provider.
fn client(settings: &ProviderSettings, redirect: &str) -> Result<Client, OAuthError> {
    let bad = |e: url::ParseError| OAuthError::Config(e.to_string());
    Ok(BasicClient::new(ClientId::new(settings.client_id.clone()))
        .set_client_secret(ClientSecret::new(settings.client_secret.expose_secret().to_owned()))
        .set_auth_type(AuthType::RequestBody)
        .set_auth_uri(AuthUrl::new(settings.auth_url.clone()).map_err(bad)?)
        .set_token_uri(TokenUrl::new(settings.token_url.clone()).map_err(bad)?)
        .set_redirect_uri(RedirectUrl::new(redirect.to_owned()).map_err(bad)?))
}

/// The scopes asked of each provider: its calendar, and staying connected (a refresh token).
pub fn scopes(p: Provider) -> &'static [&'static str] {
    match p {
        Provider::Google => &["https://www.googleapis.com/auth/calendar.events", "openid", "email"],
        Provider::Microsoft => &["offline_access", "Calendars.ReadWrite", "User.Read"],
    }
}

/// The address to send the user to, its `state`, and the PKCE verifier to keep.
pub fn authorize_url(
    p: Provider,
    settings: &ProviderSettings,
    redirect: &str,
) -> Result<(url::Url, String, String), OAuthError> {
    let c = client(settings, redirect)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = c.authorize_url(CsrfToken::new_random).set_pkce_challenge(challenge);
    for s in scopes(p) {
        req = req.add_scope(Scope::new((*s).to_owned()));
    }
    if p == Provider::Google {
        // A refresh token, every time (Google gives one only with offline access and consent).
        req = req.add_extra_param("access_type", "offline").add_extra_param("prompt", "consent");
    }
    let (url, state) = req.url();
    Ok((url, state.secret().clone(), verifier.secret().clone()))
}

fn tokens(t: &oauth2::basic::BasicTokenResponse) -> Tokens {
    Tokens {
        access: t.access_token().secret().clone(),
        refresh: t.refresh_token().map(|r| r.secret().clone()),
        expires_in: t.expires_in(),
        scope: t.scopes().map(|s| s.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ")),
    }
}

fn token_error<E: std::error::Error>(e: oauth2::RequestTokenError<E, oauth2::basic::BasicErrorResponse>) -> OAuthError {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => {
            if *r.error() == oauth2::basic::BasicErrorResponseType::InvalidGrant {
                OAuthError::InvalidGrant
            } else {
                OAuthError::Refused(r.error().to_string())
            }
        }
        oauth2::RequestTokenError::Request(e) => OAuthError::Transport(e.to_string()),
        oauth2::RequestTokenError::Parse(e, _) => OAuthError::Refused(format!("unreadable token answer: {e}")),
        oauth2::RequestTokenError::Other(s) => OAuthError::Refused(s),
    }
}

/// Exchanges an authorization code (with its PKCE verifier) for tokens.
pub async fn exchange(
    outbound: &Arc<Outbound>,
    p: Provider,
    settings: &ProviderSettings,
    redirect: &str,
    code: &str,
    verifier: &str,
) -> Result<Tokens, OAuthError> {
    let c = client(settings, redirect)?;
    let h = http(outbound, p.dependency());
    let t = c
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
        .request_async(&h)
        .await
        .map_err(token_error)?;
    Ok(tokens(&t))
}

/// Refreshes an access token.
pub async fn refresh(
    outbound: &Arc<Outbound>,
    p: Provider,
    settings: &ProviderSettings,
    redirect: &str,
    refresh_token: &str,
) -> Result<Tokens, OAuthError> {
    let c = client(settings, redirect)?;
    let h = http(outbound, p.dependency());
    let t = c
        .exchange_refresh_token(&RefreshToken::new(refresh_token.to_owned()))
        .request_async(&h)
        .await
        .map_err(token_error)?;
    Ok(tokens(&t))
}

/// Revokes a token where the provider has an RFC 7009 endpoint (Google); Ok(false) where it
/// has none (Microsoft: the stored tokens are deleted, and the user can remove the app's
/// consent in their account). Sent by us rather than the `oauth2` crate, which insists on an
/// https endpoint: the production endpoints are https (the defaults), and the outbound guard
/// allows a plain-http one only where private targets are allowed (tests, closed networks).
pub async fn revoke(
    outbound: &Arc<Outbound>,
    p: Provider,
    settings: &ProviderSettings,
    token: &str,
    hint: &str,
) -> Result<bool, OAuthError> {
    let Some(endpoint) = &settings.revoke_url else { return Ok(false) };
    let url = url::Url::parse(endpoint).map_err(|e| OAuthError::Config(e.to_string()))?;
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("token", token)
        .append_pair("token_type_hint", hint)
        .append_pair("client_id", &settings.client_id)
        .append_pair("client_secret", settings.client_secret.expose_secret())
        .finish();
    let headers = [("content-type", "application/x-www-form-urlencoded".to_owned())];
    let answer = outbound
        .send(
            p.dependency(),
            Call { method: http::Method::POST, url: &url, headers: &headers, body: body.into(), max_body: 16 * 1024 },
        )
        .await
        .map_err(|e| OAuthError::Transport(e.to_string()))?;
    // RFC 7009 2.2: 200 whether or not the token was still valid.
    match answer.status {
        200..=299 => Ok(true),
        s => Err(OAuthError::Refused(format!("the revocation endpoint answered {s}"))),
    }
}
