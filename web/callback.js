// The redirect URI of the sign-in pop-up: hands the authorization response (code and state,
// or an error) to the phone that opened the pop-up, on this origin only, and closes.
(function () {
  const params = new URLSearchParams(window.location.search);
  const message = {
    type: 'sipward-auth',
    code: params.get('code'),
    state: params.get('state'),
    error: params.get('error'),
    error_description: params.get('error_description'),
  };
  if (window.opener) {
    window.opener.postMessage(message, window.location.origin);
    window.close();
  } else {
    document.body.textContent = 'Sign-in finished; return to the phone.';
  }
})();
