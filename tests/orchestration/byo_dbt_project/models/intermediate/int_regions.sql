select
    region,
    count(*) as country_count
from {{ ref('stg_countries') }}
group by region
