package keygate

import (
	"errors"
	"fmt"
	"net/http"
)

// Code is a machine-readable error code. The codes of the Check decision and
// of the management API are one set, so a client sees the same code for the
// same failure on either transport.
type Code string

// Error codes of the Check decision (SPEC §3).
const (
	CodeMissingAPIKey              Code = "missing_api_key"
	CodeInvalidAuthorizationFormat Code = "invalid_authorization_format"
	CodeConflictingCredentials     Code = "conflicting_credentials"
	CodeInvalidAPIKey              Code = "invalid_api_key"
	CodeAPIKeyInactive             Code = "api_key_inactive"
	CodeAPIKeyExpired              Code = "api_key_expired"
	CodeOrganizationDisabled       Code = "organization_disabled"
	CodeInsufficientPermissions    Code = "insufficient_permissions"
	CodeForbidden                  Code = "forbidden"
	CodeInvalidRequest             Code = "invalid_request"
	CodeRateLimited                Code = "rate_limited"
	CodeTooManyFailedAttempts      Code = "too_many_failed_attempts"
	CodeServiceUnavailable         Code = "service_unavailable"
	// CodeSourceNotAllowed denies a key bound to sources (SPEC §11) used
	// from none of them.
	CodeSourceNotAllowed Code = "source_not_allowed"
	// CodeUsageExceeded denies a usage-limited key whose remaining uses
	// are fewer than the route's cost (SPEC §9).
	CodeUsageExceeded Code = "usage_exceeded"
)

// Error codes of the management API (SPEC §5).
const (
	CodeNotFound             Code = "not_found"
	CodeConflict             Code = "conflict"
	CodeRequestTooLarge      Code = "request_too_large"
	CodeUnsupportedMediaType Code = "unsupported_media_type"
	CodeMethodNotAllowed     Code = "method_not_allowed"
	CodeInternal             Code = "internal_error"
	// CodeInvalidSignature refuses a leaked-key report whose signature is
	// missing, wrong or from an unknown key (SPEC §13).
	CodeInvalidSignature Code = "invalid_signature"
)

type codeInfo struct {
	status  int
	message string
}

func (c Code) info() codeInfo {
	switch c {
	case CodeMissingAPIKey:
		return codeInfo{http.StatusUnauthorized, "No API key was provided. Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."}
	case CodeInvalidAuthorizationFormat:
		return codeInfo{http.StatusUnauthorized, "The Authorization header must be 'Bearer <key>'."}
	case CodeConflictingCredentials:
		return codeInfo{http.StatusBadRequest, "The request carries more than one API key."}
	case CodeInvalidAPIKey:
		return codeInfo{http.StatusUnauthorized, "The provided API key is invalid or has been revoked."}
	case CodeAPIKeyInactive:
		return codeInfo{http.StatusUnauthorized, "The provided API key is deactivated."}
	case CodeAPIKeyExpired:
		return codeInfo{http.StatusUnauthorized, "The provided API key has expired."}
	case CodeOrganizationDisabled:
		return codeInfo{http.StatusForbidden, "The organization of this API key is disabled."}
	case CodeInsufficientPermissions:
		return codeInfo{http.StatusForbidden, "The API key lacks the scope this request requires."}
	case CodeForbidden:
		return codeInfo{http.StatusForbidden, "The API key may not access this resource."}
	case CodeInvalidRequest:
		return codeInfo{http.StatusBadRequest, "The request is invalid."}
	case CodeRateLimited:
		return codeInfo{http.StatusTooManyRequests, "The API key's rate limit is exhausted; retry later."}
	case CodeTooManyFailedAttempts:
		return codeInfo{http.StatusTooManyRequests, "Too many failed authentication attempts; retry later."}
	case CodeServiceUnavailable:
		return codeInfo{http.StatusServiceUnavailable, "The API key cannot be verified right now; retry later."}
	case CodeSourceNotAllowed:
		return codeInfo{http.StatusForbidden, "The API key may not be used from this network address or workload identity."}
	case CodeUsageExceeded:
		return codeInfo{http.StatusTooManyRequests, "The API key's remaining uses are spent."}
	case CodeNotFound:
		return codeInfo{http.StatusNotFound, "The requested resource does not exist."}
	case CodeConflict:
		return codeInfo{http.StatusConflict, "The resource already exists."}
	case CodeRequestTooLarge:
		return codeInfo{http.StatusRequestEntityTooLarge, "The request body is larger than 64 KiB."}
	case CodeUnsupportedMediaType:
		return codeInfo{http.StatusUnsupportedMediaType, "The request body must be JSON (Content-Type: application/json)."}
	case CodeInvalidSignature:
		return codeInfo{http.StatusUnauthorized, "The report's signature is missing or does not verify with a configured key."}
	case CodeMethodNotAllowed:
		return codeInfo{http.StatusMethodNotAllowed, "The method is not allowed on this resource."}
	}
	return codeInfo{http.StatusInternalServerError, "An internal error occurred."}
}

// HTTPStatus is the HTTP status that answers an error with code c.
func (c Code) HTTPStatus() int { return c.info().status }

// Message is the default human-readable message of code c.
func (c Code) Message() string { return c.info().message }

// Error is an error with a code, a message for people and, for a bad field
// of a request body, the field's name. Transports translate it in one place
// each: extauthz into a CheckResponse, the management API into an HTTP
// response, the CLI into an exit code.
type Error struct {
	Code    Code
	Message string
	Param   string // the offending field, if any
	Err     error  // the cause, never shown to clients
}

// Errorf returns an *Error with code c and a formatted message.
func Errorf(c Code, format string, args ...any) *Error {
	return &Error{Code: c, Message: fmt.Sprintf(format, args...)}
}

// ParamErrorf returns an invalid_request *Error that names a body field.
func ParamErrorf(param, format string, args ...any) *Error {
	return &Error{Code: CodeInvalidRequest, Param: param, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = e.Code.Message()
	}
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, msg, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, msg)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrorCode returns the code of the first *Error in err's chain, or
// internal_error for any other non-nil error.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// ErrorMessage returns the message to show a client for err: the *Error's
// own, else its code's default. Causes are never shown.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		if e.Message != "" {
			return e.Message
		}
		return e.Code.Message()
	}
	return CodeInternal.Message()
}

// Sentinel errors of the store, with the codes the management API answers.
var (
	// ErrNotFound: no such key or organization (in the caller's organization).
	ErrNotFound = &Error{Code: CodeNotFound}
	// ErrConflict: the organization or key id exists already.
	ErrConflict = &Error{Code: CodeConflict}
	// ErrUndecidable is what a lookup answers when it chose not to ask the
	// store and cannot rule the token out (the cache, past its budget for
	// unknown tokens while notifications are down): service_unavailable,
	// and nothing failed that is worth a log line.
	ErrUndecidable = &Error{Code: CodeServiceUnavailable, Message: "The API key cannot be verified right now; retry later."}
)
