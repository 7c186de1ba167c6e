import keygate_client

client = keygate_client.Client(api_key='sk_test_8829ggKDI0t2lNvBfu0g1cGLXd4fIzaw29RuTo')
