"""
The admin endpoint's web dashboard (L{snapstore.admin.dashboard.site}):
server-rendered pages over the admin API's own routes, one module per
page, and a style sheet shipped as package data.
"""
