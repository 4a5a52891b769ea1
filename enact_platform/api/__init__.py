"""What every REST endpoint shares: who is calling and for which tenant, the error body, the
request rate, pagination and body limits. The endpoints themselves live in each app's ``api.py``."""
