// The one way both pages call the server's JSON endpoints.

const REQUEST_TIMEOUT_MS = 15000;

/**
 * Calls a JSON endpoint of ours and returns the parsed body of a 2xx answer.
 * Throws an Error whose message is fit to show the user: the server's own
 * `message` when it sent one, otherwise a plain description of the failure.
 */
export async function api(method, path, body) {
  const options = {
    method,
    credentials: 'same-origin',
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  };
  if (body !== undefined) {
    options.headers = { 'Content-Type': 'application/json' };
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    throw new Error('网络连接失败，请检查网络后重试。');
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error(data?.message ?? `服务暂时不可用（HTTP ${response.status}），请稍后重试。`);
  }
  if (data === null) {
    throw new Error('服务返回了无法识别的内容，请稍后重试。');
  }
  return data;
}
